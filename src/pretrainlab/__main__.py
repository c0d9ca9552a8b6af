from pretrainlab.cli import main

raise SystemExit(main())
