"""Node classes of the pack; one file per node, mappings merged here."""

from . import (
    best_of_n,
    gradient_guidance,
    host,
    iqa_score,
    load_adapter,
    load_genziqa,
    load_iqa_model,
    quality_condition,
    reference_transfer,
)

host.register_model_folder(host.ADAPTER_FOLDER, host.ADAPTER_EXTENSIONS)
host.register_model_folder(host.IQA_FOLDER, host.IQA_EXTENSIONS)
host.register_model_folder(host.GENZIQA_FOLDER, host.GENZIQA_EXTENSIONS)

NODE_CLASS_MAPPINGS: dict = {}
NODE_DISPLAY_NAME_MAPPINGS: dict = {}
for _module in (
    load_adapter,
    quality_condition,
    reference_transfer,
    gradient_guidance,
    load_iqa_model,
    load_genziqa,
    iqa_score,
    best_of_n,
):
    NODE_CLASS_MAPPINGS.update(_module.NODE_CLASS_MAPPINGS)
    NODE_DISPLAY_NAME_MAPPINGS.update(_module.NODE_DISPLAY_NAME_MAPPINGS)
