c++ -std=c++17 $(pkg-config --cflags convmat) main.cpp -o my_app
