"""Model merging on mergekit: input resolution, compatibility checks, sweeps, selection and the model card.

`workbench.stages.merge` is the recipe stage; `workbench merge FILE.yaml` runs a plain mergekit config.
"""
