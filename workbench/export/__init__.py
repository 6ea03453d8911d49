"""On-device export: a stage's model to GGUF with llama.cpp's own converter, quantized by llama.cpp, scored and
timed through llama.cpp (`llama-cpp-python`) so a recipe can gate a release on what runs on the device."""
