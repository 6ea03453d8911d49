"""The stage API: what a stage kind is made of. Everything above (stages, runner, cli) builds on this."""

from workbench.api.config import NAME_PATTERN, ModelSource, RecipeView, StageConfig, StrictModel
from workbench.api.context import Project, Review, ReviewContext, StageContext, StageInput, StageResult
from workbench.api.kinds import Catalog, Namespace, StageKind, UriScheme
from workbench.api.markers import (
    Consumed,
    DataFile,
    DataFolder,
    DataPath,
    DataSet,
    ModelPath,
    ModelSourcePath,
    Named,
    StageName,
    StageRef,
    consumed,
)
from workbench.api.resources import Resources

__all__ = [
    "NAME_PATTERN",
    "Catalog",
    "Consumed",
    "DataFile",
    "DataFolder",
    "DataPath",
    "DataSet",
    "ModelPath",
    "ModelSource",
    "ModelSourcePath",
    "Named",
    "Namespace",
    "Project",
    "RecipeView",
    "Resources",
    "Review",
    "ReviewContext",
    "StageConfig",
    "StageContext",
    "StageInput",
    "StageKind",
    "StageName",
    "StageRef",
    "StageResult",
    "StrictModel",
    "UriScheme",
    "consumed",
]
