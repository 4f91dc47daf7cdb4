#include <catch2/catch.hpp>

#include "test_support.hpp"
