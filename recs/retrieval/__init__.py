"""Retrieval: towers, contrastive losses, trainer, FAISS ItemIndex, candidate generation."""
