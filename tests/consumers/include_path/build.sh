c++ -std=c++17 -I convmat/include $(pkg-config --cflags eigen3) main.cpp -o my_app
