/* suite-true: does nothing and exits 0 (exec target of bench-forkexec). */
int main(void)
{
    return 0;
}
