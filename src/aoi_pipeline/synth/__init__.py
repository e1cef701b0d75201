"""Synthetic AOI data without a scanner: procedural golden PCB tiles (`boards`), the six DeepPCB defect types
and PASS nuisance painted into test images (`defects`), and whole DEFT workspaces written in the DeepPCB-AOI
layout (`workspace`). numpy and Pillow only, so the demo and the command line use it on machines without
torch.
"""
