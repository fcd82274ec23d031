"""``python -m massshift`` (and ``accelerate launch -m massshift``)."""

from massshift.cli.app import main

main()
