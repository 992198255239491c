// Registers sentry_ops._C.loader (see loader_bindings.cpp).
#pragma once

#include <pybind11/pybind11.h>

void sentry_register_loader(pybind11::module_& m);
