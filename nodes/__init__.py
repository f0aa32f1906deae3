"""Node classes of the pack; one file per node, mappings merged here."""
from . import gradient_guidance, host, load_adapter, quality_condition

host.register_model_folder(host.ADAPTER_FOLDER, host.ADAPTER_EXTENSIONS)

NODE_CLASS_MAPPINGS: dict = {}
NODE_DISPLAY_NAME_MAPPINGS: dict = {}
for _module in (load_adapter, quality_condition, gradient_guidance):
    NODE_CLASS_MAPPINGS.update(_module.NODE_CLASS_MAPPINGS)
    NODE_DISPLAY_NAME_MAPPINGS.update(_module.NODE_DISPLAY_NAME_MAPPINGS)
