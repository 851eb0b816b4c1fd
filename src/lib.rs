//! papersys: keeps sentence embeddings of arXiv metadata complete, correct and up to date.
