// Placeholder (issue 10): filled in by the faults tests.
#include <gtest/gtest.h>
