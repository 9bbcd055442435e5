from tlens_icl.cli.main import main

raise SystemExit(main())
