from spikelab.testing.dandi_archive import *  # noqa: F403  (shim until test_cli/test_registry import spikelab.testing)
