// Result<T> and Error: what every setup call (create, open, subscribe) returns.
#pragma once
#include "shm/result.hpp"
