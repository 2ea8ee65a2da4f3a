"""Driving the user's llama.cpp / ik_llama.cpp binaries (llama-perplexity, llama-quantize,
llama-imatrix) as jobs yielding the built-in jobs' events, and reading their published logs.

binaries.py  locate / detect a tool (flavour, build)      pplparse.py   perplexity/KLD/imatrix output
process.py   process group, streaming, SIGTERM->SIGKILL   quantparse.py llama-quantize output
runs.py      perplexity_run, kld_run, save_base_run, imatrix_run, quantize_run (jobs)
args.py      llama-quantize options from a recipe         logimport.py  pasted logs -> ImportedLog
"""
