// Registers sentry_ops._C.bundle (see bindings.cpp).
#pragma once

#include <pybind11/pybind11.h>

void sentry_register_bundle(pybind11::module_& m);
// Adds the model listing, the safetensors header reader and load_verified to it (load_bindings.cpp).
void sentry_register_load(pybind11::module_& bundle);
