/* placeholder */
typedef int sim_placeholder;
