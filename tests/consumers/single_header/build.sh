mkdir -p third_party/convmat && cp convmat/single_include/convmat/convmat.hpp third_party/convmat/
c++ -std=c++17 -I third_party $(pkg-config --cflags eigen3) main.cpp -o my_app
