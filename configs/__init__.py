"""The default configs, shipped in the package as ``spikelab.configs`` (edit them here)."""
