"""vecrank.rank: user profiles, kNN candidates, features and the XGBoost ranker.

The public front: :class:`Recommender` (candidates for a user and/or search text),
:class:`RetrieveConfig`, :class:`ProfileConfig` and :func:`build_profile`. The ranker arrives
with the "Rank" issue.
"""

# This folder is importable only as vecrank.rank (through the vecrank/rank symlink, or the package-dir
# mapping of an installed wheel): imported as `rank` from the repository root it would be a second
# copy of every module, with its own classes and state.
if __name__ != "vecrank.rank":
    raise ImportError(f"the rank/ folder is the package vecrank.rank; import it as vecrank.rank, not as {__name__!r}")

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
