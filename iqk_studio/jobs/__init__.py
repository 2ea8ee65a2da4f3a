"""Long jobs (quantize, perplexity, kld, imatrix) as plain generators of event records; no Qt."""
