"""vecrank: personalized recommendations for a search page that already runs Elasticsearch.

Subpackages: ``vecrank.ingest`` (catalogs and events into Elasticsearch), ``vecrank.rank``
(profiles, kNN candidates, XGBoost ranking), ``vecrank.localnode`` (a local node without Docker),
``vecrank.cli`` (the ``vecrank`` command). Importing this package imports nothing heavy.
"""

__version__ = "0.1.0"
