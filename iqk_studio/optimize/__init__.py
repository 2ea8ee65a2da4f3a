"""The optimizer: the mix that loses least for a size budget. Group costs per type (measured
KLD, cached in the results store, scaled by weighted quantization error), an exact knapsack over
plan() bytes, the solution as a compact recipe, and the predicted loss of any plan."""
