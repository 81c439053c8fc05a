"""`python -m vqtok.pipelines.demo`: see `vqtok.pipelines.demo.run.main`."""

import sys

from vqtok.pipelines.demo.run import main

sys.exit(main())
