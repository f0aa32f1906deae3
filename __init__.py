"""ComfyUI IQA-Adapter: quality-aware generation (Abud et al., ICCV 2025) as ComfyUI nodes. GPL-3.0-or-later."""

IQA_ADAPTER_PACK = True  # lets test fixtures find this pack under whatever folder name the host gave it
# The editor's node help pages (web/docs/<NodeId>/en.md, web/docs/<NodeId>.md) and, for the classic editor, tooltips and help (web/*.js).
WEB_DIRECTORY = "./web"

if __package__:  # imported as a package (by the host); pytest may also import this file bare while collecting
    import os

    from .nodes import NODE_CLASS_MAPPINGS, NODE_DISPLAY_NAME_MAPPINGS

    # The pip-installable ComfyUI (0.12.1, tested as fork2026) loads a classic pack without naming its module:
    # /object_info then says python_module "nodes" and its editor takes these nodes for built-in ones (no pack
    # badge; the help panel asks /docs/<NodeId>/en.md, a 404). Name it as upstream's loader does,
    # custom_nodes.<folder>; upstream sets the same value itself after the import.
    _module = "custom_nodes." + os.path.basename(os.path.dirname(os.path.abspath(__file__)))
    for _cls in NODE_CLASS_MAPPINGS.values():
        if getattr(_cls, "RELATIVE_PYTHON_MODULE", None) is None:
            _cls.RELATIVE_PYTHON_MODULE = _module

    __all__ = ["NODE_CLASS_MAPPINGS", "NODE_DISPLAY_NAME_MAPPINGS"]
