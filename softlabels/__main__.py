"""`python -m softlabels` (also what torchrun runs: `torchrun ... -m softlabels build ...`)."""

from softlabels.cli import main

main()
