"""3D portraits: the EG3D-compatible generator, checkpoint import, synthetic heads, 3DPE, FF3D and SemFaceEdit."""
