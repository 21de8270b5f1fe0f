"""vecrank.rank: user profiles, kNN candidates, features and the XGBoost ranker.

The public front: :class:`Recommender` (candidates for a user and/or search text),
:class:`RetrieveConfig`, :class:`ProfileConfig` and :func:`build_profile`. The ranker arrives
with the "Rank" issue.
"""

from vecrank.rank.profiles import Profile, ProfileConfig, build_profile
from vecrank.rank.queries import RequestError
from vecrank.rank.recommender import Candidate, CandidateSet, Recommender, RetrieveConfig

__all__ = [
    "Candidate",
    "CandidateSet",
    "Profile",
    "ProfileConfig",
    "Recommender",
    "RequestError",
    "RetrieveConfig",
    "build_profile",
]
