"""The Prefect deployment file, shipped in the package as ``spikelab.deployment_files``."""
