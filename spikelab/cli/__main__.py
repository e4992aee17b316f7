"""``python -m spikelab.cli``: the ``spikelab`` command."""

from spikelab.cli import main

main()
