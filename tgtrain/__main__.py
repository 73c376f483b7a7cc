"""`python -m tgtrain` and `torchrun -m tgtrain`: the tgtrain command line."""

from tgtrain.cli import main

main(prog_name="tgtrain")
