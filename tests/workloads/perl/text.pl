#!/usr/bin/perl
# The real-perl workload: text processing and a small interpreter in core Perl (perl-base's
# modules only). Generates a pseudo-random text, then counts words and bigrams, rewrites it with
# regular expressions, formats reports, and evaluates generated arithmetic programs with a
# recursive-descent parser and a stack machine. Everything printed is deterministic: hashes are
# walked in sorted order, and the generator is an LCG whose products stay exact in doubles (a
# 32-bit perl keeps integers above 2^32 as doubles).
use strict;
use warnings;

my $sentences = shift // 12000;
my $programs = shift // 600;

my $seed = 12345;
sub rnd { my $n = shift; $seed = ($seed * 69069 + 1) % 4294967296; return int($seed / 65536) % $n; }

# --- vocabulary and text
my @syll = qw(ka to re mi sun lo va te di ing ar on el us po qui ba ne or ta);
my @words = map { my $w = ''; $w .= $syll[rnd(scalar @syll)] for 1 .. 1 + rnd(4); $w } 1 .. 3000;
my @text;
for (1 .. $sentences) {
    my @s = map { $words[rnd(rnd(10) < 7 ? 300 : scalar @words)] } 1 .. 4 + rnd(12);
    $s[0] = ucfirst $s[0];
    push @text, join(' ', @s) . (rnd(5) ? '.' : '?');
}
my $text = join("\n", @text) . "\n";
printf "text: %d sentences, %d bytes\n", scalar @text, length $text;

# --- word and bigram counts
my (%freq, %bigram);
for my $line (split /\n/, $text) {
    my @w = map { lc } ($line =~ /(\w+)/g);
    $freq{$_}++ for @w;
    $bigram{"$w[$_-1] $w[$_]"}++ for 1 .. $#w;
}
my @top = (sort { $freq{$b} <=> $freq{$a} || $a cmp $b } keys %freq)[0 .. 24];
printf "word %-12s %6d\n", $_, $freq{$_} for @top;
my @topb = (sort { $bigram{$b} <=> $bigram{$a} || $a cmp $b } keys %bigram)[0 .. 9];
printf "bigram %-24s %4d\n", $_, $bigram{$_} for @topb;
printf "distinct words %d, bigrams %d\n", scalar keys %freq, scalar keys %bigram;

# --- rewriting with regular expressions
(my $t2 = $text) =~ s/\b(\w+?)ing\b/$1ed/g;
my $doubled = () = $t2 =~ /\b(\w)\w*\1\b/g;
$t2 =~ s/\b(\w)(\w*)\b/\u$2\l$1/g;
$t2 =~ tr/aeiou/AEIOU/;
my %lenhist;
$lenhist{length $_}++ for split /\s+/, $t2;
printf "rewritten %d bytes, %d words begin and end alike\n", length $t2, $doubled;
printf "len %2d: %d\n", $_, $lenhist{$_} for sort { $a <=> $b } keys %lenhist;
my $sum = unpack('%32C*', $t2);
printf "rewritten checksum %u\n", $sum;

# --- a small interpreter: generated expressions, parsed and run on a stack machine
sub gen_expr {
    my $depth = shift;
    return 1 + rnd(97) if $depth == 0 || rnd(4) == 0;
    my $op = ('+', '-', '*', '%', 'max')[rnd(5)];
    my ($l, $r) = (gen_expr($depth - 1), gen_expr($depth - 1));
    return $op eq 'max' ? "max($l,$r)" : "($l $op $r)";
}
my @tok;
sub parse_expr {  # expr := term (('+'|'-') term)*
    my @code = parse_term();
    while (@tok && $tok[0] =~ /^[-+]$/) { my $op = shift @tok; push @code, parse_term(), $op; }
    return @code;
}
sub parse_term {  # term := atom (('*'|'%') atom)*
    my @code = parse_atom();
    while (@tok && $tok[0] =~ /^[*%]$/) { my $op = shift @tok; push @code, parse_atom(), $op; }
    return @code;
}
sub parse_atom {
    my $t = shift @tok;
    if ($t eq '(') { my @c = parse_expr(); shift @tok; return @c; }
    if ($t eq 'max') { shift @tok; my @a = parse_expr(); shift @tok; my @b = parse_expr(); shift @tok; return (@a, @b, 'max'); }
    return ($t);
}
my %ops = ('+' => sub { $_[0] + $_[1] }, '-' => sub { $_[0] - $_[1] },
           '*' => sub { ($_[0] * $_[1]) % 1000003 },
           '%' => sub { $_[1] ? $_[0] % $_[1] : 0 }, 'max' => sub { $_[0] > $_[1] ? $_[0] : $_[1] });
my ($acc, $steps) = (0, 0);
for my $p (1 .. $programs) {
    my $src = gen_expr(7);
    @tok = $src =~ /(max|\d+|[-+*%(),])/g;
    my @code = parse_expr();
    my @st;
    for my $c (@code) {
        if (exists $ops{$c}) { my $b = pop @st; my $a = pop @st; push @st, $ops{$c}->($a, $b); }
        else { push @st, $c; }
        $steps++;
    }
    die "stack left with " . scalar(@st) . " values in program $p\n" if @st != 1;
    $acc = ($acc * 31 + $st[0]) % 1000000007;
    printf "program %d: %d tokens, value %d\n", $p, scalar @code, $st[0] if $p % 100 == 0;
}
printf "programs %d, steps %d, accumulated %d\n", $programs, $steps, $acc;
