"""The IQA side of the pack, plain torch: IQA models (pyiqa), reference embeddings and gradient guidance."""
