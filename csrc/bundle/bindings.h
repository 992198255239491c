// Registers sentry_ops._C.bundle (see bindings.cpp).
#pragma once

#include <pybind11/pybind11.h>

void sentry_register_bundle(pybind11::module_& m);
