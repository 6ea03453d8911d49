"""Built-in stage kinds. Importing this package registers them."""

from workbench.stages import (  # noqa: F401
    distill,
    evaluate,
    init,
    merge,
    pairs,
    preference,
    pretrain,
    sft,
    teacher_cache,
)
