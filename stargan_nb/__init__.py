__version__ = "0.1.0"

import warnings as _warnings
with _warnings.catch_warnings():
    # fastai 2.8 applies `torch.jit.script` to a layer when it is imported, which torch >= 2.10 reports as deprecated; that
    # warning is about fastai's code, not the user's, so it is silenced for that one import (later uses still warn)
    _warnings.filterwarnings('ignore', message=r'`torch\.jit\.script` is deprecated', category=FutureWarning)
    import fastai.layers  # noqa: F401
