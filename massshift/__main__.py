"""``python -m massshift`` (and ``accelerate launch -m massshift``)."""

from massshift.cli import main

main()
