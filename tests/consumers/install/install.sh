cmake -S convmat -B convmat-build -DCONVMAT_BUILD_TESTS=OFF -DCONVMAT_BUILD_EXAMPLES=OFF
cmake --install convmat-build --component convmat_library --prefix "$prefix"   # e.g. prefix=$HOME/.local
