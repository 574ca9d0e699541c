#version 330
out vec4 f_color;

void main() {
    f_color = vec4(1.0);
}
