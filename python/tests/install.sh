cmake -S convmat -B convmat-build -DCMAKE_BUILD_TYPE=Release -DCONVMAT_BUILD_TESTS=OFF -DCONVMAT_BUILD_EXAMPLES=OFF
cmake --build convmat-build --target convmat_python -j 2
cmake --install convmat-build --component convmat_python --prefix "$prefix"   # e.g. prefix=$HOME/.local
