from mirror.cli.start import main

raise SystemExit(main())
