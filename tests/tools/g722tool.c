/* An independent G.722 peer for the tests, on spandsp's implementation.
 *   g722tool encode IN.s16 OUT.g722   (16 kHz mono signed 16-bit little-endian in)
 *   g722tool decode IN.g722 OUT.s16   (64 kbit/s G.722 in)
 * Built by the test suite with: cc -O2 -o g722tool g722tool.c -lspandsp */
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <spandsp.h>

int main(int argc, char **argv) {
    if (argc != 4) {
        fprintf(stderr, "usage: %s encode|decode IN OUT\n", argv[0]);
        return 2;
    }
    FILE *in = fopen(argv[2], "rb"), *out = fopen(argv[3], "wb");
    if (!in || !out) {
        perror("open");
        return 1;
    }
    if (strcmp(argv[1], "encode") == 0) {
        g722_encode_state_t *s = g722_encode_init(NULL, 64000, 0);
        int16_t pcm[320];
        uint8_t code[320];
        size_t n;
        while ((n = fread(pcm, sizeof(int16_t), 320, in)) > 0) {
            int m = g722_encode(s, code, pcm, (int)n);
            fwrite(code, 1, (size_t)m, out);
        }
        g722_encode_free(s);
    } else if (strcmp(argv[1], "decode") == 0) {
        g722_decode_state_t *s = g722_decode_init(NULL, 64000, 0);
        uint8_t code[160];
        int16_t pcm[320];
        size_t n;
        while ((n = fread(code, 1, 160, in)) > 0) {
            int m = g722_decode(s, pcm, code, (int)n);
            fwrite(pcm, sizeof(int16_t), (size_t)m, out);
        }
        g722_decode_free(s);
    } else {
        return 2;
    }
    fclose(in);
    fclose(out);
    return 0;
}
