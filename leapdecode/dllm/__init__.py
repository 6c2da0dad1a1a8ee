"""Diffusion language models: a dLLM made from an AR model (train-dllm), stepwise and lossless parallel
decoding (ssd, auto), on leapdecode's own row-invariant forward."""
