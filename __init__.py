"""ComfyUI IQA-Adapter: quality-aware generation (Abud et al., ICCV 2025) as ComfyUI nodes. GPL-3.0-or-later."""

IQA_ADAPTER_PACK = True  # lets test fixtures find this pack under whatever folder name the host gave it
# The editor's node help pages (web/docs/<NodeId>/en.md, web/docs/<NodeId>.md) and, for the classic editor, tooltips and help (web/*.js).
WEB_DIRECTORY = "./web"

if __package__:  # imported as a package (by the host); pytest may also import this file bare while collecting
    from .nodes import NODE_CLASS_MAPPINGS, NODE_DISPLAY_NAME_MAPPINGS

    __all__ = ["NODE_CLASS_MAPPINGS", "NODE_DISPLAY_NAME_MAPPINGS"]
