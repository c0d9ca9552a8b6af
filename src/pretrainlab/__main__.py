import sys

try:
    from pretrainlab.cli import main
except KeyboardInterrupt:  # Ctrl-C while the command line's modules load: one line, like anywhere else
    print("interrupted (Ctrl-C)", file=sys.stderr)
    raise SystemExit(130) from None

raise SystemExit(main())
