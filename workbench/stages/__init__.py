"""Built-in stage kinds, listed explicitly (registration never depends on import order), plus plug-ins.

A plug-in package declares an entry point in the `workbench.stages` group that resolves to a `StageKind`:

    [project.entry-points."workbench.stages"]
    my_kind = "my_package.my_stage:KIND"
"""

from __future__ import annotations

from importlib.metadata import entry_points

from workbench.annotate.source import ARGILLA
from workbench.api.kinds import Catalog, StageKind
from workbench.errors import WorkbenchError, first_line
from workbench.evaluation.suites import SUITES
from workbench.merging.spec import TEMPLATES
from workbench.preference.judges import JUDGES
from workbench.stages import distill, evaluate, export, init, merge, pairs, preference, pretrain, sft, teacher_cache

BUILTIN_KINDS = (
    init.KIND,
    pretrain.KIND,
    teacher_cache.KIND,
    distill.KIND,
    sft.KIND,
    evaluate.KIND,
    pairs.KIND,
    preference.KIND,
    merge.KIND,
    export.KIND,
)


def builtin_catalog(plugins: bool = True) -> Catalog:
    """The built-in kinds, namespaces (suites, merge templates, judges) and URI schemes (argilla), and the plug-in
    kinds."""
    namespaces = {"suite": SUITES, "merge_template": TEMPLATES, "judge": JUDGES}
    catalog = Catalog(namespaces=namespaces, schemes={"argilla": ARGILLA})
    for kind in BUILTIN_KINDS:
        catalog.add(kind)
    if plugins:
        for entry in entry_points(group="workbench.stages"):
            source = f"entry point '{entry.name}' = {entry.value} of group workbench.stages"
            try:
                kind = entry.load()
            except Exception as error:  # noqa: BLE001 (a broken plug-in is one line naming it)
                raise WorkbenchError(
                    f"{source} could not be loaded: {type(error).__name__}: {first_line(error)}"
                ) from None
            if not isinstance(kind, StageKind):
                raise WorkbenchError(f"{source} is not a workbench.api.StageKind")
            catalog.add(kind, source)
    return catalog
