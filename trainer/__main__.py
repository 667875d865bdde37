"""`python -m trainer` (also what torchrun runs: `torchrun --standalone --nproc-per-node N -m trainer fit ...`)."""

from trainer.cli import main

main()
