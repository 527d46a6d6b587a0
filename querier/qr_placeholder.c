/* placeholder */
typedef int qr_placeholder;
