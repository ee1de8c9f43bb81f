"`python -m stargan_nb` (and `torchrun -m stargan_nb`): the `stargan_nb` console script."
from stargan_nb.cli import main

raise SystemExit(main())
