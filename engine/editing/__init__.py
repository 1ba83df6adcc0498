"""2D image editors (InstructPix2Pix, the embedded offline editor) and the Iterative Dataset Update."""
