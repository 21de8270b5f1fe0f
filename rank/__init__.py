"""vecrank.rank: user profiles, kNN candidates, features and the XGBoost ranker.

Built in the "Retrieve" and "Rank" issues.
"""
