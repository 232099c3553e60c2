from .experiment.cli import main

raise SystemExit(main())
