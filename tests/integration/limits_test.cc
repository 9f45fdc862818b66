// Placeholder (issue 10): filled in by the limits tests.
#include <gtest/gtest.h>
