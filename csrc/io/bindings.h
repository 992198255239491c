// Registers sentry_ops._C.io (see bindings.cpp).
#pragma once

#include <pybind11/pybind11.h>

void sentry_register_io(pybind11::module_& m);
